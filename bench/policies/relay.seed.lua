-- RELAY (bench only): mail for domain 'relay' is spooled (fsynced) like any other message,
-- then delivered over SMTP to the relay sink at BENCH_SINK ('127.0.0.1:PORT', set by
-- bench/run), in plaintext: TLS would add its own cost, which is not what this measures.
-- Up to 32 connections (Hermod's default connection_limit, written out).
local SINK = os.getenv 'BENCH_SINK' or '127.0.0.1:2026'
kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  if domain == 'relay' then
    return kumo.make_queue_config { protocol = { smtp = { mx_list = { SINK } } } }
  end
  return kumo.make_queue_config {}
end)
kumo.on('get_egress_path_config', function(routing_domain, source, site_name)
  return kumo.make_egress_path {
    prohibited_hosts = {}, enable_tls = 'Disabled', connection_limit = 32,
  }
end)
