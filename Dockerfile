FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p flowtrace

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/flowtrace /usr/local/bin/flowtrace
USER nobody
EXPOSE 8080
ENTRYPOINT ["flowtrace"]
CMD ["serve"]
