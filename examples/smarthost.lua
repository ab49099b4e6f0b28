-- All outbound mail through one smarthost (a relay that authenticates its
-- clients), over TLS with AUTH PLAIN.
--
-- The password stays out of the policy: it is read from the file named by
-- SMARTHOST_PASSWORD_FILE (one line). Check the file with
-- `hermod check --policy examples/smarthost.lua`.

local kumo = require 'kumo'

local DIR = os.getenv 'ACCEPT_DIR' or '/tmp/hermod-smarthost'
local RELAY = os.getenv 'SMARTHOST' or 'smtp.example.com:587'
local USER = os.getenv 'SMARTHOST_USER' or 'hermod'
local PASSWORD_FILE = os.getenv 'SMARTHOST_PASSWORD_FILE' or '/etc/hermod/smarthost-password'

kumo.on('init', function()
  kumo.define_spool { name = 'data', path = DIR .. '/spool/data' }
  kumo.define_spool { name = 'meta', path = DIR .. '/spool/meta' }
  kumo.configure_local_logs { log_dir = DIR .. '/logs' }
  kumo.start_esmtp_listener { listen = '127.0.0.1:2527' }
end)

kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  return kumo.make_queue_config {
    -- Every domain goes to the relay instead of its MX hosts.
    protocol = { smtp = { mx_list = { RELAY } } },
  }
end)

kumo.on('get_egress_path_config', function(routing_domain, source, site_name)
  return kumo.make_egress_path {
    -- Credentials only ever travel over verified TLS.
    enable_tls = 'Required',
    smtp_auth_plain_username = USER,
    -- A string is a file to read; { key_data = '...' } would be the secret itself.
    smtp_auth_plain_password = PASSWORD_FILE,
    connection_limit = 8,
  }
end)
