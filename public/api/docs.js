// Starts the vendored Swagger UI (public/vendor/swagger-ui, from the pinned swagger-ui-dist npm
// package) on this origin's OpenAPI document. Nothing is fetched from elsewhere: no validator
// badge (validatorUrl null), no external fonts; "try it out" calls this same origin.
"use strict";

window.addEventListener("DOMContentLoaded", () => {
  window.ui = window.SwaggerUIBundle({
    url: "/api/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,
    tryItOutEnabled: false,
    displayRequestDuration: true,
    defaultModelsExpandDepth: 1,
    supportedSubmitMethods: ["get", "post"],
    presets: [window.SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
});
