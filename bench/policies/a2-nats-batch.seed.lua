-- A2 batch form (bench only): as A2, but the queue hands up to 100 messages to send_batch.
-- The NATS API awaits each PubAck, so the publishes of one batch are still sequential; what
-- the batch saves is the per-message session and Lua-call overhead.
kumo.on('init', function()
  nats = kumo.nats.connect { servers = { '127.0.0.1:4222' } }
end)
kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  if domain == 'nats' then
    return kumo.make_queue_config {
      protocol = { custom_lua = { constructor = 'make.nats', batch_size = 100 } },
    }
  end
  return kumo.make_queue_config {}
end)
kumo.on('make.nats', function(domain, tenant, campaign)
  local conn = {}
  function conn:send_batch(msgs)
    for _, msg in ipairs(msgs) do
      nats:publish { subject = 'subject', payload = msg:get_data() }
    end
    return '250 ok'
  end
  function conn:close() end
  return conn
end)
