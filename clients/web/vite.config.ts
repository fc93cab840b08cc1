import { defineConfig } from "vite";

// `npm run dev` serves the UI with hot reload; grpc-web calls are proxied to a running web port
// (Envoy, e.g. from `lace serve --web`), LACE_WEB_URL or http://127.0.0.1:8080 by default.
const upstream = process.env["LACE_WEB_URL"] ?? "http://127.0.0.1:8080";

export default defineConfig({
  build: {
    outDir: "dist",
    emptyOutDir: true,
    target: "es2022",
    sourcemap: true,
  },
  server: {
    proxy: {
      "/lace.v1.ArtifactService/": { target: upstream, changeOrigin: true },
      "/lace.v1.RunService/": { target: upstream, changeOrigin: true },
    },
  },
});
