-- Example operator policy for Hermod (valid KumoMTA Lua).
--
-- What it sets up:
--   * the spool and local logs, so mail survives a restart and every
--     reception/delivery leaves an audit trail;
--   * an SMTP listener that relays for trusted hosts only, and the HTTP
--     injection/metrics listener;
--   * mail for one domain (events.example.com) published to NATS JetStream
--     instead of being sent by SMTP;
--   * every log record also POSTed as JSON to a webhook.
--
-- Adjust the constants below, then check the file with `hermod check`.

local kumo = require 'kumo'
-- The helper ships with the server; it wires a log hook, its queue and the
-- HTTP delivery for us.
local log_hooks = require 'policy-extras.log_hooks'

-- Top-level code runs in every Lua context, so plain constants belong here.
local SPOOL_DIR = '/var/spool/hermod'
local LOG_DIR = '/var/log/hermod'
local NATS_DOMAIN = 'events.example.com'
local NATS_SUBJECT = 'mail.events'
local WEBHOOK_URL = 'http://127.0.0.1:8080/hermod-events'

-- Must be declared before the catch-all get_queue_config handler below:
-- get_queue_config handlers run in registration order, and the catch-all
-- would otherwise answer for the hook's own queue too.
-- A non-2xx answer from the webhook bounces the record (no retry), so point
-- it at something that acknowledges quickly and queues on its side.
log_hooks:new_json {
  name = 'webhook',
  url = WEBHOOK_URL,
  log_parameters = {
    -- Copy the Subject into each record; cheap and handy for support.
    headers = { 'Subject' },
  },
}

kumo.on('init', function()
  -- Two spools: message bodies and their envelope/metadata. `flush = true`
  -- fsyncs each write, so a 250 reply really means the message is on disk.
  kumo.define_spool { name = 'data', path = SPOOL_DIR .. '/data', flush = true }
  kumo.define_spool { name = 'meta', path = SPOOL_DIR .. '/meta', flush = true }

  -- zstd-compressed segments; closing a segment at least once a minute keeps
  -- log shippers close to real time even when traffic is light.
  kumo.configure_local_logs {
    log_dir = LOG_DIR,
    max_segment_duration = '1 minute',
  }

  kumo.start_esmtp_listener {
    -- Bind to the interface your submitting hosts use; loopback is the safe
    -- default for an example.
    listen = '127.0.0.1:25',
    -- Only these peers may relay to arbitrary domains; anyone else gets
    -- "550 5.7.1 relaying not permitted". CIDRs must have zero host bits.
    relay_hosts = { '127.0.0.1', '::1' },
  }

  -- HTTP injection API and /metrics. Requests from trusted_hosts need no
  -- credentials, so keep that list as narrow as relay_hosts.
  kumo.start_http_listener {
    listen = '127.0.0.1:8000',
    trusted_hosts = { '127.0.0.1', '::1' },
  }

  -- One NATS connection for the whole process, shared by every delivery
  -- session. Hermod copies client handles created in `init` into every Lua
  -- context; KumoMTA does not, so on KumoMTA connect inside the constructor
  -- instead (and close the client in conn:close()). If NATS is unreachable
  -- here, start-up aborts, which is better than silently queueing forever.
  nats = kumo.nats.connect {
    servers = { '127.0.0.1:4222' },
    name = 'hermod',
  }
end)

kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  if domain == NATS_DOMAIN then
    return kumo.make_queue_config {
      -- Broker outages are usually short: retry soon, but cap the backoff so
      -- the queue drains quickly once NATS is back.
      retry_interval = '1 minute',
      max_retry_interval = '10 minutes',
      max_age = '1 day',
      protocol = { custom_lua = { constructor = 'make.nats' } },
    }
  end
  -- Everything else: ordinary SMTP delivery via MX.
  return kumo.make_queue_config {}
end)

-- Constructor: called once per delivery session; returns the connection
-- object whose `send` is called for each message of the session.
kumo.on('make.nats', function(domain, tenant, campaign)
  local conn = {}
  function conn:send(msg)
    -- publish returns only after JetStream acknowledged the message, so a
    -- successful return really means the broker has it. An error raised here
    -- is a transient failure and the message is retried.
    nats:publish { subject = NATS_SUBJECT, payload = msg:get_data() }
    -- Always return a string on success; it becomes the Delivery response.
    return '250 published'
  end
  function conn:close()
    -- The client is shared by all sessions; closing it here would break the
    -- others.
  end
  return conn
end)
