// Micro-benchmark: the gateway's HTTP/1 request reader (gateway/h1/request.ts) against
// Node's llhttp binding, the parser node:http uses, on three request shapes. Run after
// `npm run build`: node bench/h1-parse.mjs [iterations]
//
// Both sides parse the same bytes on a reused parser, as on a keep-alive connection, and
// both hand out the method, target and header strings (llhttp through the callbacks
// node:http installs). Numbers are ns per request, the median of several rounds.

import { createRequire } from 'node:module';
import { RequestReader } from '../dist/gateway/h1/request.js';

const require = createRequire(import.meta.url);
const { HTTPParser } = require('_http_common');

const ITER = Number(process.argv[2] ?? 200_000);
const ROUNDS = 7;

const small = 'GET / HTTP/1.1\r\nHost: example.com\r\n\r\n';
const browser =
  'GET /app/dashboard/settings?tab=profile&lang=en HTTP/1.1\r\n' +
  'Host: www.example.com\r\n' +
  'Connection: keep-alive\r\n' +
  'Cache-Control: max-age=0\r\n' +
  'sec-ch-ua: "Chromium";v="124", "Google Chrome";v="124", "Not-A.Brand";v="99"\r\n' +
  'sec-ch-ua-mobile: ?0\r\n' +
  'Upgrade-Insecure-Requests: 1\r\n' +
  'User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36\r\n' +
  'Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8\r\n' +
  'Sec-Fetch-Site: same-origin\r\n' +
  'Referer: https://www.example.com/app/dashboard\r\n' +
  'Accept-Encoding: gzip, deflate, br\r\n' +
  'Accept-Language: en-US,en;q=0.9,de;q=0.8\r\n' +
  'Cookie: session=4f1c2a9be07d4c1f8a3e5b6d7c8e9f00; theme=dark; _ga=GA1.2.1234567890.1700000000\r\n\r\n';
const piece = 'x'.repeat(64);
const chunked =
  'POST /upload HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n' +
  `40\r\n${piece}\r\n`.repeat(16) +
  '0\r\n\r\n';

function ours(bytes) {
  const reader = new RequestReader({ maxHeaderSize: 16 * 1024, maxHeaderCount: 100 });
  let sink = 0;
  return () => {
    reader.push(bytes);
    for (let ev = reader.next(); ev !== undefined; ev = reader.next()) {
      if (ev.type === 'head') sink += ev.head.rawHeaders.length + ev.head.target.length;
      else if (ev.type === 'body') sink += ev.chunk.length;
      else if (ev.type === 'end') break;
    }
    return sink;
  };
}

function llhttp(bytes) {
  const parser = new HTTPParser();
  let sink = 0;
  parser[HTTPParser.kOnHeaders] = (headers) => {
    sink += headers.length;
  };
  parser[HTTPParser.kOnHeadersComplete] = (major, minor, headers, method, url) => {
    sink += headers.length + url.length;
    return 0;
  };
  parser[HTTPParser.kOnBody] = (b) => {
    sink += b.length;
  };
  parser[HTTPParser.kOnMessageComplete] = () => {};
  parser.initialize(HTTPParser.REQUEST, {}, 0, HTTPParser.kLenientNone);
  return () => {
    const r = parser.execute(bytes);
    if (typeof r !== 'number') throw r;
    return sink;
  };
}

function measure(run) {
  for (let i = 0; i < 20_000; i++) run();
  const rounds = [];
  for (let r = 0; r < ROUNDS; r++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < ITER; i++) run();
    rounds.push(Number(process.hrtime.bigint() - t0) / ITER);
  }
  rounds.sort((a, b) => a - b);
  return rounds[ROUNDS >> 1];
}

const cases = [
  ['small GET head', small],
  ['browser-like head (12 headers)', browser],
  ['chunked body, 16 pieces', chunked],
];
const rows = cases.map(([name, text]) => {
  const bytes = Buffer.from(text, 'latin1');
  const a = measure(ours(bytes));
  const b = measure(llhttp(bytes));
  return { case: name, bytes: bytes.length, 'ours ns/req': a.toFixed(0), 'llhttp ns/req': b.toFixed(0), 'ours/llhttp': (a / b).toFixed(2) };
});
console.log(`node ${process.version}, llhttp ${process.versions.llhttp}, ${ITER} requests x ${ROUNDS} rounds (median)`);
console.table(rows);
