-- wrk script: POST a question to the edge's ask route.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"question":"Will I find love this year?","language":"en","personality":"wise"}'
