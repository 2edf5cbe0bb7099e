-- Shared prologue of every rate-limit script. scalekit.ratelimit._redis writes one
-- script per policy: "local R = {...}" (the policy's constants: per window limit,
-- period in us and, for the bucket scripts, burst), this prologue, then the
-- algorithm's body. The commonest call, a hit of cost 1 on Redis TIME, therefore
-- sends no argument at all, like a bare EVALSHA.
-- Times are integer microseconds (exact in Lua's doubles up to 2**53 us, ~285 years),
-- so no float ever needs formatting.
-- ARGV (both optional): [1] cost (default 1; negative: a peek, which writes nothing),
--       [2] now in us (absent or '': Redis TIME).
-- Reply: one bulk string, per window " ok remaining reset_us retry_us" (retry_us -1:
-- never), formatted with %d: one string parses faster in redis-py than an array.
-- Redis 7 always replicates a script's effects; 5.0-6.2 do by default but can be
-- configured not to, and < 5 never: only they are asked to (TIME is not deterministic).
if not redis.REDIS_VERSION_NUM and redis.replicate_commands then redis.replicate_commands() end
local cost = tonumber(ARGV[1]) or 1
local commit = cost > 0
if not commit then cost = -cost end
local now = tonumber(ARGV[2])
if not now then
  local t = redis.call('TIME')
  now = t[1] * 1000000 + t[2]
end
local out = ''
local allok = true
