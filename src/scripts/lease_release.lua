-- Gives the lease up only if it is still ours, marks the lease record released (so a standby
-- may take it at once), then tells waiting standbys.
-- KEYS[1] primary_lock, KEYS[2] lease record
-- ARGV[1] token, ARGV[2] release channel (empty: no notice), ARGV[3] message
-- Returns 1 when released, 0 when the lease was no longer ours.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  if redis.call('HGET', KEYS[2], 'token') == ARGV[1] then
    redis.call('HSET', KEYS[2], 'released', '1', 'channel', '')
  end
  if ARGV[2] ~= '' then
    redis.call('PUBLISH', ARGV[2], ARGV[3])
  end
  return 1
end
return 0
