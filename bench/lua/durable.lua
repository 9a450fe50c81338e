-- Durable sends: POST /api/conversations/{id}/messages on conversations made beforehand.
-- Run with as many threads as connections: each thread (so each connection) owns its own
-- conversations, and no conversation ever gets two sends at once (that would be a 409).
-- Arguments after "--": the file of conversation ids (one a line), the sends per
-- conversation before moving to the next one, "stream" or "json", and the thread count.
local threads_set_up = 0

function setup(thread)
  thread:set("lane", threads_set_up)
  threads_set_up = threads_set_up + 1
end

function init(args)
  local lanes = tonumber(args[4])
  local all = {}
  for line in io.lines(args[1]) do
    if #line > 0 then
      all[#all + 1] = line
    end
  end
  mine = {}
  for index = lane + 1, #all, lanes do
    mine[#mine + 1] = all[index]
  end
  per_conversation = tonumber(args[2])
  streamed = args[3] == "stream"
  headers = { ["Content-Type"] = "application/json" }
  stream_field = ""
  if streamed then
    headers["Accept"] = "text/event-stream"
    stream_field = ',"stream":true'
  end
  position, sent, counter = 1, 0, 0
end

function request()
  if sent >= per_conversation then
    -- Past the last conversation the lane starts over; they just grow longer then.
    position = position % #mine + 1
    sent = 0
  end
  sent = sent + 1
  counter = counter + 1
  local body = string.format(
    '{"content":"Benchmark message %d of lane %d: tell me about it."%s}',
    counter, lane, stream_field
  )
  return wrk.format("POST", "/api/conversations/" .. mine[position] .. "/messages", headers, body)
end
