-- BACKLOG (bench only, scenario 7): A2's connection-object form with three differences, all
-- needed to accept mail while the broker is down and then drain it:
-- * the server comes from BENCH_NATS_URL: bench/run starts a private nats-server only after
--   the whole backlog is spooled;
-- * retry_on_initial_connect, or `init` would fail on the absent broker and the server would
--   not start; the client keeps reconnecting in the background;
-- * short retries: the few messages tried before the ready queue pauses would otherwise wait
--   out the 20-minute default and the drain could never complete within the run.
kumo.on('init', function()
  nats = kumo.nats.connect {
    servers = { os.getenv 'BENCH_NATS_URL' or '127.0.0.1:4222' },
    retry_on_initial_connect = true,
  }
end)
kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  if domain == 'nats' then
    return kumo.make_queue_config {
      retry_interval = '2s',
      max_retry_interval = '4s',
      protocol = { custom_lua = { constructor = 'make.nats' } },
    }
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
