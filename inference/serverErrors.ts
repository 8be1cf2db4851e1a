/**
 * HTTP errors in the OpenAI error shape (DESIGN.md section 10):
 *   {"error": {"message": ..., "type": ..., "param": ..., "code": ...}}
 * with the status a client can act on (400 bad field, 401 key, 404 model/route, 413 body size,
 * 503 overloaded). The server answers every one of them and keeps serving.
 */

export type ApiErrorType = 'invalid_request_error' | 'authentication_error' | 'not_found_error' | 'server_error' | 'overloaded_error';

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type: ApiErrorType = 'invalid_request_error',
    readonly param: string | null = null,
    readonly code: string | null = null,
  ) {
    super(message);
    this.name = 'ApiError';
  }

  body(): { error: { message: string; type: string; param: string | null; code: string | null } } {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

export const badRequest = (message: string, param: string | null = null, code: string | null = 'invalid_value') => new ApiError(400, message, 'invalid_request_error', param, code);
