-- BACKLOG-SMTP (bench only): mail for domain 'relay' goes over SMTP to BENCH_SINK
-- ('127.0.0.1:PORT', set by bench/run), where nothing listens until the whole backlog is
-- accepted; then bench/run starts the relay sink there. Retries are quick (2 s, at most
-- 4 s) so the drain is not held back by a retry schedule, as in the NATS backlog.
local SINK = os.getenv 'BENCH_SINK' or '127.0.0.1:2026'
kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  if domain == 'relay' then
    return kumo.make_queue_config {
      retry_interval = '2s',
      max_retry_interval = '4s',
      protocol = { smtp = { mx_list = { SINK } } },
    }
  end
  return kumo.make_queue_config {}
end)
kumo.on('get_egress_path_config', function(routing_domain, source, site_name)
  return kumo.make_egress_path {
    prohibited_hosts = {}, enable_tls = 'Disabled', connection_limit = 32,
  }
end)
