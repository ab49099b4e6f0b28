-- MAILDIR + LOG HOOK (bench only): the maildir baseline plus the issue's log-hook setup
-- (with BENCH_DEFERRED_SPOOL=1 the hook sets deferred_spool: records are spooled only if they
-- must wait):
-- every Reception and Delivery record goes through the policy-extras.log_hooks helper to
-- NATS JetStream, 100 records per batch, each batch published (and acknowledged) as one JSON
-- array. The helper's handlers are registered before the catch-all get_queue_config below.
local log_hooks = require 'policy-extras.log_hooks'
kumo.on('init', function()
  nats = kumo.nats.connect { servers = { '127.0.0.1:4222' } }
end)
log_hooks:new {
  name = 'events',
  batch_size = 100,
  max_batch_latency = '100ms',
  log_parameters = { deferred_spool = os.getenv 'BENCH_DEFERRED_SPOOL' == '1' },
  constructor = function(domain, tenant, campaign)
    local conn = {}
    function conn:send_batch(msgs)
      local lines = {}
      for i, m in ipairs(msgs) do
        lines[i] = m:get_data()
      end
      nats:publish { subject = 'subject', payload = '[' .. table.concat(lines, ',') .. ']' }
      return '250 ok'
    end
    function conn:close() end
    return conn
  end,
}

local MAILDIR = (os.getenv 'BENCH_DIR' or '/tmp/hermod-bench') .. '/maildir'
kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  if domain == 'maildir' then
    return kumo.make_queue_config { protocol = { maildir_path = MAILDIR } }
  end
  return kumo.make_queue_config {}
end)
