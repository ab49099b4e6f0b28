-- policy-extras.dkim_sign: DKIM signing configured by TOML (or JSON) files.
-- Written for Hermod from the documented behaviour of KumoMTA's helper:
--
--   [base]                          defaults for every signature
--   selector = "dkim1024"
--   headers = ["From", "To", "Subject", "Date"]
--   over_sign = true
--   additional_signatures = ["MyESP"]
--
--   [domain."example.com"]          sign mail whose From domain matches
--   selector = "s1"                 ('*.example.com' matches subdomains)
--   algo = "sha256"                 or "ed25519"
--   filename = "/path/to/key"       default /opt/kumomta/etc/dkim/DOMAIN/SELECTOR.key
--
--   [signature."MyESP"]             an extra signature for another domain
--   domain = "esp.example"
--   policy = "Always"               or "OnlyIfMissingDomainBlock"
--
-- local signer = dkim_sign:setup { files } returns a function to call last
-- in smtp_server_message_received / http_message_generated: signer(msg).
-- The files are read and checked when the policy loads (a misspelt key is
-- reported as file:line); `hermod check` also builds every signer, so a
-- missing or unusable key file is reported before mail arrives.
local kumo = require 'kumo'
local utils = require 'policy-extras.policy_utils'

local M = {}

local DKIM_PATH = '/opt/kumomta/etc/dkim'

local COMMON = {
  selector = 'string',
  headers = 'table',
  policy = 'string',
  expiration = 'number',
  header_canonicalization = 'string',
  body_canonicalization = 'string',
  over_sign = 'boolean',
}

local function with(extra)
  local t = utils.merge_into(COMMON, {})
  return utils.merge_into(extra, t)
end

local KEYS = {
  base = with { additional_signatures = 'table' },
  domain = with { algo = 'string', filename = 'string' },
  signature = with { algo = 'string', filename = 'string', domain = 'string' },
}

-- Documented keys Hermod does not implement yet: refused, never ignored.
local NOT_YET = {
  vault_mount = 'HashiCorp Vault key sources',
  vault_path_prefix = 'HashiCorp Vault key sources',
  vault_key = 'HashiCorp Vault key sources',
}

local function check_block(file, where, kind, block)
  if type(block) ~= 'table' then
    utils.file_error(file, where, string.format('%s must be a table', where))
  end
  for key, value in pairs(block) do
    if NOT_YET[key] then
      utils.file_error(file, key, string.format("%s: '%s' needs %s, which Hermod does not support yet", where, key, NOT_YET[key]))
    end
    local want = KEYS[kind][key]
    if not want then
      utils.file_error(file, key, string.format("%s: unknown key '%s'", where, key))
    end
    if type(value) ~= want then
      utils.file_error(file, key, string.format("%s: '%s' must be a %s", where, key, want))
    end
  end
  if block.algo and block.algo ~= 'sha256' and block.algo ~= 'ed25519' then
    utils.file_error(file, 'algo', string.format("%s: algo must be 'sha256' or 'ed25519', not '%s'", where, block.algo))
  end
end

local function load(files)
  local data = { base = {}, domain = {}, signature = {} }
  local origin = {}
  for _, file in ipairs(files) do
    local raw = utils.load_json_or_toml_file(file)
    for key, value in pairs(raw) do
      if not KEYS[key] then
        utils.file_error(file, key, string.format("unknown key '%s': expected [base], [domain.<name>] or [signature.<name>]", key))
      end
      if key == 'base' then
        check_block(file, 'base', 'base', value)
        utils.merge_into(value, data.base)
        origin.base = file
      else
        if type(value) ~= 'table' then
          utils.file_error(file, key, string.format("'%s' must be a table of named blocks", key))
        end
        for name, block in pairs(value) do
          local where = string.format("%s '%s'", key, name)
          check_block(file, name, key, block)
          if key == 'domain' and block.policy and block.policy ~= 'Always' then
            utils.file_error(file, 'policy', where .. ": policy must be 'Always'")
          end
          if key == 'signature' and block.policy and block.policy ~= 'Always' and block.policy ~= 'OnlyIfMissingDomainBlock' then
            utils.file_error(file, 'policy', where .. ": policy must be 'Always' or 'OnlyIfMissingDomainBlock'")
          end
          data[key][name] = utils.merge_into(block, data[key][name] or {})
          origin[key .. '\0' .. name] = file
        end
      end
    end
  end
  for _, name in ipairs(data.base.additional_signatures or {}) do
    local sig = data.signature[name]
    if not sig then
      utils.file_error(origin.base, name, string.format("base.additional_signatures names '%s', which no [signature.'%s'] defines", name, name))
    end
    if not sig.domain then
      utils.file_error(origin['signature\0' .. name], name, string.format("signature '%s' has no domain", name))
    end
  end
  for kind, blocks in pairs { domain = data.domain, signature = data.signature } do
    for name, block in pairs(blocks) do
      if not (block.selector or data.base.selector) then
        utils.file_error(origin[kind .. '\0' .. name], name, string.format("%s '%s' has no selector and [base] sets none", kind, name))
      end
    end
  end
  return data, origin
end

-- The signer parameters of one block for `domain`, and its algorithm.
local function params(base, block, domain)
  local selector = block.selector or base.selector
  local function pick(key)
    if block[key] ~= nil then
      return block[key]
    end
    return base[key]
  end
  return {
    domain = domain,
    selector = selector,
    headers = pick 'headers',
    expiration = pick 'expiration',
    header_canonicalization = pick 'header_canonicalization',
    body_canonicalization = pick 'body_canonicalization',
    over_sign = pick 'over_sign',
    key = block.filename or string.format('%s/%s/%s.key', DKIM_PATH, domain, selector),
  }, block.algo or 'sha256'
end

local function make_signer(p, algo)
  if algo == 'ed25519' then
    return kumo.dkim.ed25519_signer(p)
  end
  return kumo.dkim.rsa_sha256_signer(p)
end

local configured = false

function M:setup(files)
  if configured then
    error('policy-extras.dkim_sign: setup was already called', 2)
  end
  if type(files) ~= 'table' then
    error('policy-extras.dkim_sign: setup expects a list of file names', 2)
  end
  configured = true
  local data, origin = load(files)
  local domains = kumo.domain_map.new(data.domain)

  kumo.on('validate_config', function()
    for kind, blocks in pairs { domain = data.domain, signature = data.signature } do
      for name, block in pairs(blocks) do
        local domain = kind == 'domain' and name or block.domain
        -- A wildcard block signs as the message's own domain; check it with a stand-in.
        domain = domain:gsub('^%*%.', 'wildcard.')
        local ok, err = pcall(make_signer, params(data.base, block, domain))
        if not ok then
          utils.file_error(origin[kind .. '\0' .. name], name, string.format('%s %s: %s', kind, name, tostring(err)))
        end
      end
    end
  end)

  return function(msg)
    local from = msg:from_header()
    if not from then
      kumo.reject(552, '5.6.0 DKIM signing requires a From header, but it is missing from this message')
    end
    local domain = from.domain
    local signed = false
    local block = domain and domains[domain]
    if block then
      msg:dkim_sign(make_signer(params(data.base, block, domain)))
      signed = true
    end
    for _, name in ipairs(data.base.additional_signatures or {}) do
      local sig = data.signature[name]
      if not (signed and sig.policy == 'OnlyIfMissingDomainBlock') then
        msg:dkim_sign(make_signer(params(data.base, sig, sig.domain)))
      end
    end
  end
end

return M
