-- wrk script: POST /predict with a unique id, and, every other request, POST /update of a
-- prediction made a few hundred requests before (long answered, whichever connection sent it).
-- Usage: wrk -s predict_update.lua <url> -- <first id>
-- Each wrk thread takes its own block of ids. At the end it prints one line of JSON.

local first_id = 0
local threads = {}
predicted = 0  -- global, so that summary_extra() can read each thread's with thread:get()
local turn = 0

local observation = '{"Age": 22.0, "Cabin": null, "Embarked": "S", "Fare": 7.25, '
  .. '"Parch": 0, "Pclass": 3, "Sex": "male", "SibSp": 1}'

function setup(thread)
  thread:set("thread_index", #threads)
  table.insert(threads, thread)
end

function init(args)
  first_id = tonumber(args[1] or "0") + thread_index * 10000000
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  turn = turn + 1
  -- wrk calls request() once more than it sends, at the start: the first id may not exist.
  if turn % 2 == 0 and predicted > 501 then
    local body = '{"id": ' .. (first_id + predicted - 500) .. ', "true_class": ' .. (turn % 4 / 2) .. '}'
    return wrk.format(nil, "/update", nil, body)
  end
  predicted = predicted + 1
  local body = '{"id": ' .. (first_id + predicted) .. ', "observation": ' .. observation .. '}'
  return wrk.format(nil, "/predict", nil, body)
end

-- The predictions made, over every thread (each keeps its own count), for the summary line.
function summary_extra()
  local made = 0
  for _, thread in ipairs(threads) do
    made = made + thread:get("predicted")
  end
  return '"predictions": ' .. made
end

-- The summary line is report.lua's, next to this file.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "") .. "report.lua")
