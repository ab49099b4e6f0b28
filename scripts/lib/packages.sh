# scripts/lib/packages.sh: sourced by scripts/hermod and scripts/services. Installs Debian
# packages that are missing, and only those, so both commands work on a fresh machine that has
# just the Rust toolchain and gcc.
#
# What the build itself needs (every other C dependency is compiled from vendored sources):
#   g++ make               RocksDB is C++; librdkafka builds with its own configure and make
#                          (both come with a usual Rust set-up, so they are rarely installed).
#   libclang-dev           librocksdb-sys generates its Rust bindings with bindgen at build time,
#                          and bindgen loads libclang; the crate has no pre-generated bindings.
#   libssl-dev pkg-config  librdkafka's TLS and SASL SCRAM (Kafka `security.protocol=ssl`,
#                          `sasl_ssl`). SASL PLAIN and SCRAM are built into librdkafka; only
#                          GSSAPI would need Cyrus libsasl2, and Hermod does not enable it.
HERMOD_BUILD_PACKAGES=(g++ make libclang-dev libssl-dev pkg-config)

pkg_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -qx 'install ok installed'; }

# ensure_packages TAG PACKAGE...: apt-get installs the packages that are not installed yet.
ensure_packages() {
  local tag=$1 missing=() p
  shift
  command -v apt-get >/dev/null || {
    printf '%s: not a Debian-like system; make sure these are installed: %s\n' "$tag" "$*" >&2
    return 0
  }
  for p in "$@"; do
    pkg_installed "$p" || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    printf '%s: system packages present\n' "$tag" >&2
    return
  fi
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || {
      printf '%s: ERROR: missing packages %s; install them as root (apt-get install %s)\n' \
        "$tag" "${missing[*]}" "${missing[*]}" >&2
      return 1
    }
    sudo=(sudo)
  fi
  printf '%s: installing %s\n' "$tag" "${missing[*]}" >&2
  # ${a[@]+...}: an empty array is "unbound" to `set -u` in bash before 4.4.
  ${sudo[@]+"${sudo[@]}"} apt-get update -qq
  ${sudo[@]+"${sudo[@]}"} env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}
