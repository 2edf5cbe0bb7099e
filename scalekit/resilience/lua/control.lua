-- By hand. ARGV[15]: 'open' (with ARGV[16] seconds, '' = until closed), 'close',
-- 'disable', or 'read' (no change).
local action = ARGV[15]
if action == 'open' then
  if ARGV[16] == '' then
    if st ~= 'forced_open' then move('forced_open') end
  else
    until_ = now + tonumber(ARGV[16])
    move('open')
  end
  save()
elseif action == 'close' then
  close()
  save()
elseif action == 'disable' then
  if st ~= 'disabled' then move('disabled') end
  save()
end
return reply(nil)
