-- Shared prologue of the sampling scripts (prepended by scalekit.backends._lua).
-- ARGV[1]: now in seconds, or '' to read Redis TIME (production; tests send a fake clock's).
if redis.replicate_commands then redis.replicate_commands() end
local now
if ARGV[1] ~= '' then
  now = tonumber(ARGV[1])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
