-- wrk script: POST /predict with a unique id per request.
-- Usage: wrk -s bench/predict.lua <url> -- <first id> [<Age, as raw JSON: "Infinity" poisons it>]
-- Each wrk thread takes its own block of ids, so no two requests share one.
-- At the end it prints one line of JSON for bench/run.py.

local first_id = 0
local threads = {}
local counter = 0

local observation = '{"Age": 22.0, "Cabin": null, "Embarked": "S", "Fare": 7.25, '
  .. '"Parch": 0, "Pclass": 3, "Sex": "male", "SibSp": 1}'

function setup(thread)
  thread:set("thread_index", #threads)
  table.insert(threads, thread)
end

function init(args)
  first_id = tonumber(args[1] or "0") + thread_index * 1000000
  if args[2] then
    observation = observation:gsub('"Age": 22.0', '"Age": ' .. args[2])
  end
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  counter = counter + 1
  local body = '{"id": ' .. (first_id + counter) .. ', "observation": ' .. observation .. '}'
  return wrk.format(nil, "/predict", nil, body)
end

-- The summary line is report.lua's, next to this file.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "") .. "report.lua")
