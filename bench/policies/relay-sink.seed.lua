-- RELAY SINK (bench only): the receiving MTA of scenario relay. Every mail goes to queue
-- 'null': the 250 comes after the DATA is read and the policy has run, with no spool write
-- and no delivery (only its Reception record is logged). No trace headers are added.
BENCH_ESMTP_LISTENER = {
  trace_headers = { received_header = false, supplemental_header = false },
}
kumo.on('smtp_server_message_received', function(msg)
  msg:set_meta('queue', 'null')
end)
