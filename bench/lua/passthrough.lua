-- Stateless chat completions: every connection sends the same small request.
-- Arguments after "--": the model name, then "stream" or "json", then an optional API key.
function init(args)
  local model = args[1] or "fake"
  local stream = "false"
  if args[2] == "stream" then
    stream = "true"
  end
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  if args[3] and args[3] ~= "" then
    wrk.headers["Authorization"] = "Bearer " .. args[3]
  end
  wrk.body = string.format(
    '{"model":"%s","messages":[{"role":"user",'
      .. '"content":"Tell me something about the number 42."}],"stream":%s}',
    model, stream
  )
end
