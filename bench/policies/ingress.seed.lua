-- INGRESS (bench only): mail for domain 'sink' is spooled (fsynced) like any other message,
-- then delivered by a custom_lua connection whose send does nothing. Unlike queue 'null',
-- which is dropped before the spool, this measures the durable reception path.
kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  if domain == 'sink' then
    return kumo.make_queue_config { protocol = { custom_lua = { constructor = 'make.sink' } } }
  end
  return kumo.make_queue_config {}
end)
kumo.on('make.sink', function(domain, tenant, campaign)
  local conn = {}
  function conn:send(msg) return '250 ok' end
  function conn:close() end
  return conn
end)
