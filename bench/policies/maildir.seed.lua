-- MAILDIR (bench only): mail for domain 'maildir' is spooled, then written into a Maildir in
-- the run's directory (tmp/, fsync, rename into new/). Baseline of the log-hook scenario.
local MAILDIR = (os.getenv 'BENCH_DIR' or '/tmp/hermod-bench') .. '/maildir'
kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  if domain == 'maildir' then
    return kumo.make_queue_config { protocol = { maildir_path = MAILDIR } }
  end
  return kumo.make_queue_config {}
end)
