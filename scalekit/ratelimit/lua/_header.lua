-- Shared prologue, prepended to every rate-limit script by scalekit.backends._lua.
-- Times are integer microseconds (exact in Lua's doubles up to 2**53 us, ~285 years),
-- so no float ever needs formatting.
-- ARGV: [1] cost (negative: a peek, which writes nothing), [2] now in us ('' = Redis
--       TIME), then per window the script's rate arguments (limit, period in us, ...).
-- Reply: one bulk string, per window " ok remaining reset_us retry_us" (retry_us -1:
-- never), formatted with %d: one string parses faster in redis-py than an array.
-- Redis 7 always replicates a script's effects; 5.0-6.2 do by default but can be
-- configured not to, and < 5 never: only they are asked to (TIME is not deterministic).
if not redis.REDIS_VERSION_NUM and redis.replicate_commands then redis.replicate_commands() end
local cost = tonumber(ARGV[1])
local commit = cost > 0
if not commit then cost = -cost end
local now = tonumber(ARGV[2])
if not now then
  local t = redis.call('TIME')
  now = t[1] * 1000000 + t[2]
end
local out = ''
local allok = true
