-- BENCH prelude: replaces the examples' P0 and nothing else. Same spool layout (separate
-- data and meta spools), local logs and listeners as P0, but the directory and the ports come
-- from bench/run so that runs never share state or collide with a test on 2025/8000.
kumo = require 'kumo'                        -- seeds use a global `kumo`
local DIR = os.getenv 'BENCH_DIR' or '/tmp/hermod-bench'
local SMTP = os.getenv 'BENCH_SMTP_LISTEN' or '127.0.0.1:2025'
local HTTP = os.getenv 'BENCH_HTTP_LISTEN' or '127.0.0.1:8000'
kumo.on('pre_init', function()
  kumo.define_spool { name = 'data', path = DIR .. '/spool/data' }
  kumo.define_spool { name = 'meta', path = DIR .. '/spool/meta' }
  kumo.configure_local_logs { log_dir = DIR .. '/logs', max_segment_duration = '1s' }
  kumo.start_esmtp_listener { listen = SMTP }
  kumo.start_http_listener { listen = HTTP }
end)

