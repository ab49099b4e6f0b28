-- B2 batch form (bench only): publish the whole batch, then wait for every confirm, so up
-- to 100 publishes are in flight per session.
kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  if domain == 'amqp' then
    return kumo.make_queue_config {
      protocol = { custom_lua = { constructor = 'make.amqp', batch_size = 100 } },
    }
  end
  return kumo.make_queue_config {}
end)
kumo.on('make.amqp', function(domain, tenant, campaign)
  local client = kumo.amqp.build_client 'amqp://localhost'
  local conn = {}
  function conn:send_batch(msgs)
    local confirms = {}
    for i, msg in ipairs(msgs) do
      confirms[i] = client:publish { routing_key = 'logging', payload = msg:get_data() }
    end
    for _, confirm in ipairs(confirms) do
      local r = confirm:wait()
      if r.status ~= 'Ack' and r.status ~= 'NotRequested' then
        kumo.reject(500, kumo.json_encode(r))
      end
    end
    return '250 ok'
  end
  function conn:close() client:close() end
  return conn
end)
