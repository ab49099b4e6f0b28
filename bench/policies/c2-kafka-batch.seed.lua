-- C2 batch form (bench only): producer:send_batch submits the whole batch concurrently.
kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  if domain == 'kafka' then
    return kumo.make_queue_config {
      protocol = { custom_lua = { constructor = 'make.kafka', batch_size = 100 } },
    }
  end
  return kumo.make_queue_config {}
end)
kumo.on('make.kafka', function(domain, tenant, campaign)
  local producer = kumo.kafka.build_producer { ['bootstrap.servers'] = 'localhost:9092' }
  local conn = {}
  function conn:send_batch(msgs)
    local records = {}
    for i, msg in ipairs(msgs) do
      records[i] = { topic = 'my.topic', payload = msg:get_data(), timeout = '1 minute' }
    end
    local failed, errors = producer:send_batch(records)
    if #failed > 0 then
      error(#failed .. ' of ' .. #records .. ' records failed: ' .. tostring(errors[1]))
    end
    return '250 ok'
  end
  function conn:close() producer:close() end
  return conn
end)
