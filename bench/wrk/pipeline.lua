-- wrk script: pipelining. Arguments after `--`: DEPTH [PATH]
--   wrk -t1 -c64 -d10s -s pipeline.lua http://HOST:PORT -- 8 /
-- Each connection writes DEPTH requests at once and waits for all DEPTH
-- responses before writing the next batch. wrk counts every response as a
-- request, but records ONE latency sample per batch: the time from writing
-- the batch to reading the last of its responses.
init = function(args)
  local depth = tonumber(args[1]) or 8
  local path = args[2] or "/"
  local r = {}
  for i = 1, depth do
    r[i] = wrk.format(nil, path)
  end
  req = table.concat(r)
end

request = function()
  return req
end

-- done(): the report in report.lua, next to this file.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "report.lua")
