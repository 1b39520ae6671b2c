# syntax=docker/dockerfile:1
# Switchyard gateway image. Build: docker build -t switchyard .
# Run:   docker run -p 8080:8080 -v $PWD/switchyard.yaml:/etc/switchyard/switchyard.yaml switchyard

# --- build stage: compile TypeScript with the dev toolchain ---------------------------
FROM node:24-bookworm-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci
COPY tsconfig.json ./
COPY bin ./bin
COPY config ./config
COPY control ./control
COPY discovery ./discovery
COPY gateway ./gateway
RUN npx tsc -p tsconfig.json

# --- runtime stage: production dependencies and compiled JavaScript only -------------
FROM node:24-bookworm-slim AS runtime
ENV NODE_ENV=production
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev && npm cache clean --force
COPY --from=build /src/dist ./dist
# The dashboard's static files: /app/dist/control/ui.js serves /app/control/ui.
COPY --from=build /src/control/ui ./control/ui
# The file state store writes next to the config by default; give the user a place.
RUN mkdir -p /var/lib/switchyard /etc/switchyard && chown node:node /var/lib/switchyard
USER node
EXPOSE 8080 9901 9090
# /live on the admin listener answers 200 while the process runs.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.SWITCHYARD_ADMIN_PORT || '9901') + '/live').then(r => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# exec form: node is PID 1 and receives SIGTERM itself, so graceful shutdown runs.
ENTRYPOINT ["node", "dist/bin/switchyard.js"]
CMD ["serve", "--config", "/etc/switchyard/switchyard.yaml"]
