// Writes the generated reference docs: docs/configuration.md and docs/config.schema.json
// (config schema, defaults and config/descriptions.ts) and docs/control-api.md (the control API's OpenAPI
// document). Run with `npm run docs` (it builds first); test/docs.test.ts fails when
// the checked-in files differ from what this writes.
import { writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const { configurationMarkdown, descriptionGaps, documentedSchema } = await import(join(root, 'dist/config/docs.js'));
const { openApiDocument, controlApiMarkdown } = await import(join(root, 'dist/control/openapi.js'));

const gaps = descriptionGaps();
if (gaps.undocumented.length || gaps.unknown.length) {
  for (const k of gaps.undocumented) process.stderr.write(`config/descriptions.ts: no description for ${k}\n`);
  for (const k of gaps.unknown) process.stderr.write(`config/descriptions.ts: ${k} is not a key of the schema\n`);
  process.exit(1);
}
writeFileSync(join(root, 'docs/configuration.md'), configurationMarkdown());
writeFileSync(join(root, 'docs/config.schema.json'), `${JSON.stringify(documentedSchema(), null, 2)}\n`);
writeFileSync(join(root, 'docs/control-api.md'), controlApiMarkdown(await openApiDocument()));
process.stdout.write('wrote docs/configuration.md, docs/config.schema.json and docs/control-api.md\n');
