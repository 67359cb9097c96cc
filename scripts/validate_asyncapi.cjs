// Validates an AsyncAPI document with AsyncAPI's own parser (@asyncapi/parser), following
// its $refs to the schema files: `make check-asyncapi` installs the parser and runs this.
// Exits 1 when the parser reports an error; prints every diagnostic it gives.
// CommonJS, so that NODE_PATH finds the parser installed under .local/.
const { Parser, fromFile } = require('@asyncapi/parser');

const severities = ['error', 'warning', 'info', 'hint'];

async function main(path) {
  const { document, diagnostics } = await fromFile(new Parser(), path).parse();
  for (const d of diagnostics) {
    console.log(`${severities[d.severity]} ${d.code}: ${d.message} at ${JSON.stringify(d.path)}`);
  }
  const errors = diagnostics.filter((d) => d.severity === 0).length;
  if (!document || errors) {
    console.log(`${path}: NOT valid (${errors} errors)`);
    process.exit(1);
  }
  console.log(
    `${path}: valid AsyncAPI ${document.version()}: ${document.allMessages().length} messages ` +
      `on ${document.channels().length} channel(s), ${diagnostics.length} diagnostics, 0 errors`,
  );
}

main(process.argv[2]);
