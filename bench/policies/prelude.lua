-- BENCH prelude: replaces the examples' P0 and nothing else. Same spool layout (separate
-- data and meta spools), local logs and listeners as P0, but the directory and the ports come
-- from bench/run so that runs never share state or collide with a test on 2025/8000.
kumo = require 'kumo'                        -- seeds use a global `kumo`
local DIR = os.getenv 'BENCH_DIR' or '/tmp/hermod-bench'
local SMTP = os.getenv 'BENCH_SMTP_LISTEN' or '127.0.0.1:2025'
local HTTP = os.getenv 'BENCH_HTTP_LISTEN' or '127.0.0.1:8000'
-- A seed may set the global BENCH_ESMTP_LISTENER to a table of further listener parameters
-- (the relay sink turns the trace headers off); the examples' seeds do not.
kumo.on('pre_init', function()
  kumo.define_spool { name = 'data', path = DIR .. '/spool/data' }
  kumo.define_spool { name = 'meta', path = DIR .. '/spool/meta' }
  kumo.configure_local_logs { log_dir = DIR .. '/logs', max_segment_duration = '1s' }
  local listener = { listen = SMTP }
  for k, v in pairs(BENCH_ESMTP_LISTENER or {}) do listener[k] = v end
  kumo.start_esmtp_listener(listener)
  kumo.start_http_listener { listen = HTTP }
end)

