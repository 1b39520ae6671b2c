// The comparison of a served answer with its mirror copy, table-driven: statuses,
// compared headers, JSON bodies (ignored paths, first differing path in sorted key
// order), other bodies (first differing byte), bodies over maxBodyBytes (digest), and the
// JSON path syntax the schema admits.

import { describe, expect, it } from 'vitest';
import { JSON_PATH_RE } from '../config/schema.js';
import type { MirrorConfig } from '../config/types.js';
import { BodyTee, compareAnswers, firstJsonDiff, parseJsonPath, type Answer } from './mirror.js';

function plan(over: Partial<MirrorConfig> = {}) {
  const config: MirrorConfig = { to: 'green', percent: 100, methods: ['GET'], compare: true, ignore: [], headers: [], maxBodyBytes: 1024, maxInflight: 10, timeoutMs: 1000, ...over };
  return { config, ignore: config.ignore.map(parseJsonPath) };
}

function answer(status: number, body: string | Buffer, opts: { type?: string; headers?: Record<string, string>; limit?: number } = {}): Answer {
  const tee = new BodyTee(opts.limit ?? 1024);
  const b = typeof body === 'string' ? Buffer.from(body) : body;
  // In two chunks, as a stream would bring it.
  tee.push(b.subarray(0, Math.floor(b.length / 2)));
  tee.push(b.subarray(Math.floor(b.length / 2)));
  return { status, headers: new Map(Object.entries(opts.headers ?? {})), body: tee.finish(), contentType: opts.type ?? 'application/json', ms: 1 };
}

describe('compareAnswers', () => {
  const cases: [string, ReturnType<typeof plan>, Answer, Answer, { result: string; where: string }][] = [
    ['identical JSON', plan(), answer(200, '{"a":1}'), answer(200, '{"a":1}'), { result: 'match', where: '' }],
    ['same JSON, other key order and spacing', plan(), answer(200, '{"a":1,"b":[1,2]}'), answer(200, '{ "b": [1, 2], "a": 1 }'), { result: 'match', where: '' }],
    ['status differs', plan(), answer(200, '{}'), answer(500, '{}'), { result: 'status_diff', where: 'status' }],
    ['nested field differs', plan(), answer(200, '{"u":{"plan":{"tier":"gold"}}}'), answer(200, '{"u":{"plan":{"tier":"silver"}}}'), { result: 'body_diff', where: '$.u.plan.tier' }],
    ['first difference in sorted key order', plan(), answer(200, '{"z":1,"b":1}'), answer(200, '{"z":2,"b":2}'), { result: 'body_diff', where: '$.b' }],
    ['array element', plan(), answer(200, '{"l":[1,2,3]}'), answer(200, '{"l":[1,9,3]}'), { result: 'body_diff', where: '$.l[1]' }],
    ['array longer', plan(), answer(200, '[1,2]'), answer(200, '[1,2,3]'), { result: 'body_diff', where: '$[2]' }],
    ['missing key', plan(), answer(200, '{"a":1,"b":2}'), answer(200, '{"a":1}'), { result: 'body_diff', where: '$.b' }],
    ['odd key named with brackets', plan(), answer(200, '{"a b":1}'), answer(200, '{"a b":2}'), { result: 'body_diff', where: "$['a b']" }],
    ['ignored path', plan({ ignore: ['$.timestamp'] }), answer(200, '{"a":1,"timestamp":1}'), answer(200, '{"a":1,"timestamp":2}'), { result: 'match', where: '' }],
    ['ignored path does not hide another difference', plan({ ignore: ['$.timestamp'] }), answer(200, '{"a":1,"timestamp":1}'), answer(200, '{"a":2,"timestamp":2}'), { result: 'body_diff', where: '$.a' }],
    ['ignored with a wildcard', plan({ ignore: ['$.items[*].id'] }), answer(200, '{"items":[{"id":1,"n":"x"},{"id":2,"n":"y"}]}'), answer(200, '{"items":[{"id":7,"n":"x"},{"id":8,"n":"y"}]}'), { result: 'match', where: '' }],
    ['ignored index (the rest keeps its indexes)', plan({ ignore: ['$[0]'] }), answer(200, '[0,1,2]'), answer(200, '[5,1,2]'), { result: 'match', where: '' }],
    ['ignored index, a later one differs', plan({ ignore: ['$[0]'] }), answer(200, '[0,1,2]'), answer(200, '[5,1,3]'), { result: 'body_diff', where: '$[2]' }],
    ['text body: first differing byte', plan(), answer(200, 'hello world', { type: 'text/plain' }), answer(200, 'hello wOrld', { type: 'text/plain' }), { result: 'body_diff', where: 'byte 7' }],
    ['text body: one is longer', plan(), answer(200, 'abc', { type: 'text/plain' }), answer(200, 'abcd', { type: 'text/plain' }), { result: 'body_diff', where: 'byte 3' }],
    ['not JSON after all', plan(), answer(200, '{nope'), answer(200, '{nopf'), { result: 'body_diff', where: 'byte 4' }],
    ['compared header differs', plan({ headers: ['content-type'] }), answer(200, '{}', { headers: { 'content-type': 'application/json' } }), answer(200, '{}', { headers: { 'content-type': 'text/json' } }), { result: 'body_diff', where: 'header content-type' }],
    ['header not compared', plan(), answer(200, '{}', { headers: { etag: '1' } }), answer(200, '{}', { headers: { etag: '2' } }), { result: 'match', where: '' }],
    ['compare: false looks at the status only', plan({ compare: false }), answer(200, 'a'), answer(200, 'b'), { result: 'match', where: '' }],
  ];
  it.each(cases)('%s', (_name, p, served, copy, want) => {
    expect(compareAnswers(p, served, copy)).toEqual(want);
  });

  it('bodies over maxBodyBytes are compared by digest; the offset is past the kept prefix', () => {
    const a = Buffer.alloc(100, 1);
    const b = Buffer.from(a);
    expect(compareAnswers(plan({ maxBodyBytes: 10 }), answer(200, a, { limit: 10 }), answer(200, b, { limit: 10 }))).toEqual({ result: 'match', where: '' });
    b[50] = 2;
    expect(compareAnswers(plan({ maxBodyBytes: 10 }), answer(200, a, { limit: 10 }), answer(200, b, { limit: 10 }))).toEqual({ result: 'body_diff', where: 'byte 10' });
  });
});

describe('JSON paths', () => {
  it.each([
    ['$.timestamp', ['timestamp']],
    ['$.a.b', ['a', 'b']],
    ['$.items[*].id', ['items', '*', 'id']],
    ['$.l[3]', ['l', 3]],
    ["$['a b'].c", ['a b', 'c']],
    ['$.*', ['*']],
  ])('%s', (p, want) => {
    expect(JSON_PATH_RE.test(p)).toBe(true);
    expect(parseJsonPath(p).map((s) => (typeof s === 'symbol' ? '*' : s))).toEqual(want);
  });

  it.each(['timestamp', '$.', '$..a', '$[a]', 'a.b', '$.a[-1]'])('%s is refused by the schema', (p) => {
    expect(JSON_PATH_RE.test(p)).toBe(false);
  });

  it('firstJsonDiff: equal values, type changes, null', () => {
    expect(firstJsonDiff({ a: [1, { b: null }] }, { a: [1, { b: null }] })).toBeUndefined();
    expect(firstJsonDiff({ a: 1 }, { a: '1' })).toBe('$.a');
    expect(firstJsonDiff({ a: [] }, { a: {} })).toBe('$.a');
    expect(firstJsonDiff({ a: null }, { a: {} })).toBe('$.a');
  });
});
