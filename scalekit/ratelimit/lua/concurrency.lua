-- Concurrency leases. KEYS[1]: sorted set lease id -> expiry time.
-- ARGV: [1] op (acquire | release | renew | count), [2] now ('' = TIME),
--       [3] lease id, [4] limit, [5] ttl seconds.
-- Reply: {ok, in_flight, retry_after (string)}
if redis.replicate_commands then redis.replicate_commands() end
local op = ARGV[1]
local now
if ARGV[2] ~= '' then
  now = tonumber(ARGV[2])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function fmt(x) return string.format('%.17g', x) end
local key = KEYS[1]
redis.call('ZREMRANGEBYSCORE', key, '-inf', fmt(now))
local ttl = tonumber(ARGV[5])
local function keep()
  local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if #last > 0 then
    local v = math.ceil((tonumber(last[2]) - now) * 1000)
    if v < 1 then v = 1 end
    redis.call('PEXPIRE', key, v)
  end
end
if op == 'acquire' then
  local n = redis.call('ZCARD', key)
  if n < tonumber(ARGV[4]) then
    redis.call('ZADD', key, fmt(now + ttl), ARGV[3])
    keep()
    return {1, n + 1, '0'}
  end
  local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  return {0, n, fmt(tonumber(first[2]) - now)}
elseif op == 'release' then
  local removed = redis.call('ZREM', key, ARGV[3])
  return {removed, redis.call('ZCARD', key), '0'}
elseif op == 'renew' then
  local ok = 0
  if redis.call('ZSCORE', key, ARGV[3]) then
    redis.call('ZADD', key, fmt(now + ttl), ARGV[3])
    keep()
    ok = 1
  end
  return {ok, redis.call('ZCARD', key), '0'}
end
return {1, redis.call('ZCARD', key), '0'}
