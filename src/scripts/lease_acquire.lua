-- Takes the primary lease when it is free, or from a holder whose death Redis has seen,
-- and bumps the fencing epoch in the same step. Attempts also record the caller as a live
-- instance, so operators can see standbys. The lease record (KEYS[5], no TTL) keeps the
-- server time of the last renewal, the holder's liveness channel and the server run it was
-- written on: a lease key that vanished without expiring is never taken early from it.
-- KEYS[1] primary_lock, KEYS[2] epoch, KEYS[3] heartbeat, KEYS[4] instances, KEYS[5] lease record
-- ARGV[1] token, ARGV[2] lock ttl (ms), ARGV[3] heartbeat value, ARGV[4] heartbeat ttl (ms),
-- ARGV[5] instance id, ARGV[6] the highest epoch the caller has seen (0 if none),
-- ARGV[7] the caller's liveness channel ('' for none), ARGV[8] the caller's own token when it
-- may take back a lease that vanished while it held it ('' otherwise), ARGV[9] '1' when the
-- caller has seen this bot's lease before (a missing record is then a loss, not a first start),
-- ARGV[10] / ARGV[11] the token and liveness channel of a holder the caller saw dead at least
-- the grace ago ('' for none), ARGV[12] the server run on which the caller's own liveness broke
-- while it held the lease ('' for none): it may not take the lease back on that run,
-- ARGV[13] '1' to record the caller as a live instance (standbys looking at a holder's liveness
-- ten times a second do it once per poll interval, so those looks write nothing).
-- Returns {code, epoch, holder, liveness, wait_ms, recorded, run_id}:
--   code 1: acquired with that epoch; recorded is 1 when the caller's liveness vouches for it.
--   code 0: held by `holder`; liveness 1 alive, 0 seen dead on this server run, -1 unknown;
--           the last field is then the holder's liveness channel instead of the run id.
--   code 2: free, but the last renewal (or the loss of the record) is under a lock ttl old:
--           nobody may take it for wait_ms yet.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local ttl = tonumber(ARGV[2])
if ARGV[13] == '1' then
  redis.call('ZADD', KEYS[4], now + ttl, ARGV[5])
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
  redis.call('PEXPIRE', KEYS[4], ttl)
end

local run_id_cache
local function run_id()
  if not run_id_cache then
    run_id_cache = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)') or ''
  end
  return run_id_cache
end
local function subscribers(channel)
  return tonumber(redis.call('PUBSUB', 'NUMSUB', channel)[2]) or 0
end
local function current_epoch()
  return tonumber(redis.call('GET', KEYS[2])) or 0
end

local record = redis.call('HMGET', KEYS[5], 'token', 'renewed_at', 'ttl', 'channel', 'run_id',
  'released', 'loss_at')
local rec_token, rec_channel, rec_run = record[1], record[4], record[5]

local holder = redis.call('GET', KEYS[1])
local take = false
if holder then
  -- The holder's liveness counts only when it was registered for this very token on this
  -- server run: subscriptions do not survive a restart or a change of master.
  local liveness = -1
  if rec_token == holder and rec_channel and rec_channel ~= '' then
    if subscribers(rec_channel) > 0 then
      liveness = 1
    elseif rec_run == run_id() then
      liveness = 0
    end
  end
  -- A taker must itself be vouched for, so that its lease too ends at any restart of Redis.
  if liveness == 0 and ARGV[10] ~= '' and holder == ARGV[10] and rec_channel == ARGV[11]
      and ARGV[7] ~= '' and subscribers(ARGV[7]) > 0 then
    take = true
  else
    return {0, current_epoch(), holder, liveness, 0, 0, rec_channel or ''}
  end
else
  local wait_ms = 0
  if ARGV[8] ~= '' and (ARGV[12] == '' or ARGV[12] ~= run_id())
      and (not rec_token or rec_token == ARGV[8] or rec_token == '' or rec_run ~= run_id()) then
    -- The caller held the lease when it vanished: nobody else can have led since.
    take = true
  elseif rec_token then
    local rec_ttl = tonumber(record[3]) or ttl
    if rec_run ~= run_id() then
      -- Written before this server started: restored data may be older than the last
      -- renewal, so the loss counts from now.
      redis.call('HSET', KEYS[5], 'run_id', run_id(), 'loss_at', now, 'released', '0')
      wait_ms = rec_ttl
    elseif record[6] == '1' then
      take = true
    else
      local since = math.max(tonumber(record[2]) or 0, tonumber(record[7]) or 0)
      if now - since >= rec_ttl then
        take = true
      else
        wait_ms = rec_ttl - (now - since)
      end
    end
  elseif ARGV[9] == '1' then
    -- The record is gone with the lease (a restart without persistence, a flush, an eviction):
    -- leave a marker so every instance, new ones too, keeps off for a lock ttl.
    redis.call('HSET', KEYS[5], 'token', '', 'renewed_at', 0, 'ttl', ttl, 'channel', '',
      'run_id', run_id(), 'released', '0', 'loss_at', now)
    wait_ms = ttl
  else
    take = true
  end
  if not take then
    return {2, current_epoch(), '', -1, wait_ms, 0, ''}
  end
end

redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
local epoch = redis.call('INCR', KEYS[2])
local floor = tonumber(ARGV[6]) or 0
if epoch <= floor then
  epoch = floor + 1
  redis.call('SET', KEYS[2], epoch)
end
redis.call('SET', KEYS[3], ARGV[3], 'PX', ARGV[4])
local channel = ''
if ARGV[7] ~= '' and subscribers(ARGV[7]) > 0 then
  channel = ARGV[7]
end
redis.call('HSET', KEYS[5], 'token', ARGV[1], 'renewed_at', now, 'ttl', ttl, 'channel', channel,
  'run_id', run_id(), 'epoch', epoch, 'released', '0', 'loss_at', 0)
local recorded = 0
if channel ~= '' then recorded = 1 end
return {1, epoch, '', -1, 0, recorded, run_id()}
