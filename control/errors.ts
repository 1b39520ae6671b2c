// The control plane's error type: an HTTP status and a stable code, answered as
// {"error":{"code","message",...extra}} by the API and mapped to exit codes by the CLI.

export class ControlError extends Error {
  constructor(
    readonly statusCode: number,
    readonly code: string,
    message: string,
    readonly extra?: Record<string, unknown>,
  ) {
    super(message);
    this.name = 'ControlError';
  }
}
