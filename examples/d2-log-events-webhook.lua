-- D2: log events to an HTTP webhook (D1 with the hook routed to queue 'webhook').
--
-- P0 (harness prelude) followed by scenario D2, as in the acceptance spec.
-- Use it unchanged as the policy file of `hermod serve`.
--
-- The webhook URL comes from WEBHOOK_URL so tests can point it at a port they
-- bound themselves. Mail for @nats is published as in A2, so there are
-- delivery records to report; that part needs the same NATS stream as A2.

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

-- D2
local WEBHOOK_URL = os.getenv('WEBHOOK_URL') or 'http://127.0.0.1:8080/events'

kumo.on('init', function()
  nats = kumo.nats.connect { servers = { '127.0.0.1:4222' } }
end)
kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  if domain == 'nats' then
    return kumo.make_queue_config { protocol = { custom_lua = { constructor = 'make.nats' } } }
  end
  if domain == 'webhook' then
    return kumo.make_queue_config { protocol = { custom_lua = { constructor = 'make.webhook' } } }
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

kumo.on('pre_init', function()
  kumo.configure_log_hook { name = 'events' }
end)
kumo.on('should_enqueue_log_record', function(msg, hook_name)
  if hook_name ~= 'events' then return end
  msg:set_meta('queue', 'webhook')
  return true
end)

kumo.on('make.webhook', function(domain, tenant, campaign)
  -- One client per session: it pools connections to the webhook and is closed
  -- when the session ends.
  local client = kumo.http.build_client {}
  local conn = {}
  function conn:send(msg)
    local response = client:post(WEBHOOK_URL)
      :header('Content-Type', 'application/json')
      :body(msg:get_data())
      :send()
    local disposition = string.format('%d %s: %s',
      response:status_code(), response:status_reason() or '', response:text())
    if response:status_is_success() then
      return disposition
    end
    -- A 5xx is the receiver's trouble and may pass: retry. Anything else
    -- (4xx, unexpected redirects) will not fix itself: bounce.
    if response:status_is_server_error() then
      kumo.reject(451, disposition)
    end
    kumo.reject(550, disposition)
  end
  function conn:close()
    client:close()
  end
  return conn
end)
