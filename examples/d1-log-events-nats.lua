-- D1: log events to NATS (A2 plus a log hook). Needs a JetStream stream capturing subject 'subject'.
--
-- P0 (harness prelude) followed by scenario D1 (A2 + the D1 snippet), as in the acceptance spec.
-- Use it unchanged as the policy file of `hermod serve`.

-- P0 - harness prelude (valid KumoMTA Lua): a global `kumo`, spools,
-- local logs and the SMTP/HTTP listeners, all from `pre_init` so the
-- scenario's own `init` is left untouched.
kumo = require 'kumo'                        -- seeds use a global `kumo`
local DIR = os.getenv 'ACCEPT_DIR' or '/tmp/kumo-accept'
kumo.on('pre_init', function()
  kumo.define_spool { name = 'data', path = DIR .. '/spool/data' }
  kumo.define_spool { name = 'meta', path = DIR .. '/spool/meta' }
  kumo.configure_local_logs { log_dir = DIR .. '/logs', max_segment_duration = '1s' }
  kumo.start_esmtp_listener { listen = '127.0.0.1:2025' }
  kumo.start_http_listener { listen = '127.0.0.1:8000' }
end)

-- A2
kumo.on('init', function()
  nats = kumo.nats.connect { servers = { '127.0.0.1:4222' } }
end)
kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  if domain == 'nats' then
    return kumo.make_queue_config { protocol = { custom_lua = { constructor = 'make.nats' } } }
  end
  return kumo.make_queue_config {}
end)
kumo.on('make.nats', function(domain, tenant, campaign)
  local conn = {}
  function conn:send(msg)
    nats:publish { subject = 'subject', payload = msg:get_data() }
    return '250 ok'
  end
  function conn:close() end
  return conn
end)

-- D1
kumo.on('pre_init', function()
  kumo.configure_log_hook { name = 'events' }
end)
kumo.on('should_enqueue_log_record', function(msg, hook_name)
  if hook_name ~= 'events' then return end
  msg:set_meta('queue', 'nats')
  return true
end)
