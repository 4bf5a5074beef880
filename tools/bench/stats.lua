-- wrk script: GET the monitoring routes in turn, as a crowd of dashboards would.
-- At the end it prints one line of JSON for bench/monitoring_cost.py.

local paths = {"/stats", "/stats?hours=24", "/stats/series?every=day&hours=720"}
local counter = 0

function request()
  counter = counter + 1
  return wrk.format("GET", paths[counter % #paths + 1])
end

-- The summary line is report.lua's, next to this file.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "") .. "report.lua")
