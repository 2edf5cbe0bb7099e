-- Concurrency leases. KEYS[1]: sorted set lease id -> expiry time (us).
-- ARGV: [1] op (acquire | release | renew | count), [2] now in us ('' = Redis TIME),
--       [3] lease id, [4] limit, [5] ttl in us.
-- Reply: {ok, in_flight, retry_after in us}
if not redis.REDIS_VERSION_NUM and redis.replicate_commands then redis.replicate_commands() end
local op = ARGV[1]
local now = tonumber(ARGV[2])
if not now then
  local t = redis.call('TIME')
  now = t[1] * 1000000 + t[2]
end
local key = KEYS[1]
redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
local ttl = tonumber(ARGV[5])
if op == 'acquire' then
  local n = redis.call('ZCARD', key)
  if n < tonumber(ARGV[4]) then
    redis.call('ZADD', key, now + ttl, ARGV[3])
    local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
    redis.call('PEXPIRE', key, math.ceil((last[2] - now) / 1000))
    return {1, n + 1, 0}
  end
  local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  return {0, n, first[2] - now}
elseif op == 'release' then
  local removed = redis.call('ZREM', key, ARGV[3])
  return {removed, redis.call('ZCARD', key), 0}
elseif op == 'renew' then
  local ok = 0
  if redis.call('ZSCORE', key, ARGV[3]) then
    redis.call('ZADD', key, now + ttl, ARGV[3])
    local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
    redis.call('PEXPIRE', key, math.ceil((last[2] - now) / 1000))
    ok = 1
  end
  return {ok, redis.call('ZCARD', key), 0}
end
return {1, redis.call('ZCARD', key), 0}
