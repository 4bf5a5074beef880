-- wrk script: GET /health, the floor under every route: what gunicorn, Flask and the service's
-- own before- and after-request work cost with nothing else to do.
-- At the end it prints one line of JSON for bench/run.py.

function request()
  return wrk.format("GET", "/health")
end

-- The summary line is report.lua's, next to this file.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "") .. "report.lua")
