//! A private Postfix instance (Debian's `postfix` package, which `scripts/services` installs):
//! its own configuration and queue in a tempdir, `smtpd` on one 127.0.0.x address with
//! STARTTLS (a fresh self-signed certificate), accepting mail for one domain and discarding it
//! after the 250. Its log says what it received.

use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub struct Postfix {
    dir: tempfile::TempDir,
    pub ip: Ipv4Addr,
    pub port: u16,
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!(
            "{what}: {e} (is Debian's postfix package installed? ./scripts/services installs it)"
        )
    });
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Postfix {
    /// Start Postfix on `ip:port` accepting mail for `domain`.
    pub async fn start(ip: Ipv4Addr, port: u16, domain: &str) -> Postfix {
        let dir = tempfile::Builder::new()
            .prefix("hermod-postfix")
            .tempdir()
            .expect("creating a tempdir");
        let root = dir.path();
        // Postfix's own processes run as the postfix user and must reach their directories.
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
        let conf = root.join("conf");
        let data = root.join("data");
        for d in [&conf, &root.join("queue"), &data] {
            std::fs::create_dir_all(d).unwrap();
        }
        run(
            Command::new("chown").arg("postfix").arg(&data),
            "chown postfix data dir",
        );
        let cert = conf.join("cert.pem");
        let key = conf.join("key.pem");
        run(
            Command::new("openssl")
                .args([
                    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                ])
                .arg("-keyout")
                .arg(&key)
                .arg("-out")
                .arg(&cert)
                .args(["-subj", "/CN=mx.postfix.test"]),
            "openssl req",
        );
        // smtpd reads its key after dropping privileges to the postfix user.
        run(
            Command::new("chown").arg("postfix").arg(&key).arg(&cert),
            "chown postfix key",
        );
        let main_cf = format!(
            "compatibility_level = 3.6
queue_directory = {queue}
data_directory = {data}
mail_owner = postfix
setgid_group = postdrop
myhostname = mx.postfix.test
mydestination = {domain}
local_recipient_maps =
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_tls_cert_file = {cert}
smtpd_tls_key_file = {key}
smtpd_tls_security_level = may
smtpd_tls_loglevel = 1
local_transport = discard:
default_transport = discard:
alias_maps =
alias_database =
maillog_file_prefixes = /tmp, /var
maillog_file = {log}
",
            queue = root.join("queue").display(),
            data = data.display(),
            cert = cert.display(),
            key = key.display(),
            log = root.join("maillog").display(),
        );
        std::fs::write(conf.join("main.cf"), main_cf).unwrap();
        let master_cf = format!(
            "{ip}:{port} inet n - n - - smtpd
pickup unix n - n 60 1 pickup
cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
rewrite unix - - n - - trivial-rewrite
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
verify unix - - n - 1 verify
proxymap unix - - n - - proxymap
showq unix n - n - - showq
error unix - - n - - error
retry unix - - n - - error
discard unix - - n - - discard
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
tlsmgr unix - - n 1000? 1 tlsmgr
postlog unix-dgram n - n - 1 postlogd
"
        );
        std::fs::write(conf.join("master.cf"), master_cf).unwrap();
        run(
            Command::new("postfix").arg("-c").arg(&conf).arg("start"),
            "postfix start",
        );
        let pf = Postfix { dir, ip, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect((ip, port)).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "postfix did not listen on {ip}:{port}; its log:\n{}",
                pf.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        pf
    }

    fn conf(&self) -> PathBuf {
        self.dir.path().join("conf")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Postfix's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("maillog")).unwrap_or_default()
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = Command::new("postfix")
            .arg("-c")
            .arg(self.conf())
            .arg("stop")
            .output();
    }
}
