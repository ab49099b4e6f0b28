-- Hermod's built-in policy, used by `hermod serve` without --policy.
-- It accepts mail from loopback (the listener's default relay_hosts) on
-- 127.0.0.1:2525 and delivers every message into a Maildir under the data
-- directory: <data-dir>/maildir/<recipient domain>/new/.
local kumo = require 'kumo'

local DATA_DIR = os.getenv 'HERMOD_DATA_DIR' or './data'

kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  return kumo.make_queue_config {
    retry_interval = '1 minute',
    max_retry_interval = '20 minutes',
    protocol = {
      maildir_path = DATA_DIR .. '/maildir/{{ domain_part }}',
    },
  }
end)
