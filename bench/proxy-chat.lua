-- wrk script: a streamed /api/chat (NDJSON, 5 content chunks + the final one) with a bearer key.
wrk.method = "POST"
wrk.body = '{"model":"qwen2.5:0.5b","messages":[{"role":"user","content":"Will it rain?"}]}'
wrk.headers["Content-Type"] = "application/json"
