-- wrk script: POST a chat completion straight to the fake Groq (its own latency, no edge).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer bench"
wrk.body = '{"model":"llama-3.1-8b-instant","messages":[{"role":"user","content":"Will I find love?"}]}'
