-- Outbound SMTP: mail for any domain goes to the domain's MX hosts.
--
-- Two source addresses share the traffic 3:1 through one pool; big mailbox
-- providers get gentler shaping than everyone else. Check the file with
-- `hermod check --policy examples/outbound.lua`.

local kumo = require 'kumo'

local DIR = os.getenv 'ACCEPT_DIR' or '/tmp/hermod-outbound'

kumo.on('init', function()
  kumo.define_spool { name = 'data', path = DIR .. '/spool/data' }
  kumo.define_spool { name = 'meta', path = DIR .. '/spool/meta' }
  kumo.configure_local_logs { log_dir = DIR .. '/logs' }
  -- Relays only for loopback (the default of relay_hosts).
  kumo.start_esmtp_listener { listen = '127.0.0.1:2526' }
end)

-- Where mail leaves from. Replace the addresses with ones this host owns;
-- a source_address that is not configured on the machine fails to bind.
local SOURCES = {
  ['ip-1'] = { source_address = '127.0.0.1', ehlo_domain = 'mta1.example.com' },
  ['ip-2'] = { source_address = '127.0.0.1', ehlo_domain = 'mta2.example.com' },
}

kumo.on('get_egress_source', function(name)
  local s = SOURCES[name]
  if s then
    return kumo.make_egress_source {
      name = name,
      source_address = s.source_address,
      ehlo_domain = s.ehlo_domain,
    }
  end
end)

kumo.on('get_egress_pool', function(name)
  if name == 'outbound' then
    return kumo.make_egress_pool {
      name = 'outbound',
      entries = { { name = 'ip-1', weight = 3 }, { name = 'ip-2', weight = 1 } },
    }
  end
end)

kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  return kumo.make_queue_config {
    egress_pool = 'outbound',
    retry_interval = '10 minutes',
    max_age = '3 days',
  }
end)

-- Shaping per site: the site name is derived from the MX hosts, so all
-- domains hosted by one provider share these limits.
kumo.on('get_egress_path_config', function(routing_domain, source, site_name)
  if site_name:find('google') or site_name:find('outlook') then
    return kumo.make_egress_path {
      connection_limit = 10,
      max_message_rate = '50/s',
      max_deliveries_per_connection = 100,
      enable_tls = 'Opportunistic',
    }
  end
  return kumo.make_egress_path {
    connection_limit = 4,
    max_connection_rate = '10/min',
    enable_tls = 'Opportunistic',
  }
end)
