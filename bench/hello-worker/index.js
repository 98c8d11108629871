// The baseline: the smallest Worker there is, served by the same wrangler/workerd as the edge.
export default {
  fetch() {
    return new Response('{"answer":"hello"}', { headers: { "content-type": "application/json" } });
  },
};
