// Calls to Edgeplane's HTTPS API with the signed-in principal's token, and what the
// console knows of the API's health: when it last answered, and the last failure.

const KEY = "edgeplane.token";
// The page is served at <base>/console: the API is at <base>.
export const BASE = location.pathname.replace(/\/console\/?$/, "");

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export const health = { lastOk: 0, down: null };
const listeners = new Set();
export function onHealth(listener) { listeners.add(listener); }
function tell() { for (const listener of listeners) listener(health); }

export function token() { return sessionStorage.getItem(KEY); }
export function setToken(value) {
  if (value) sessionStorage.setItem(KEY, value); else sessionStorage.removeItem(KEY);
}

export async function call(method, path, { timeout = 10000 } = {}) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), timeout);
  let response;
  try {
    response = await fetch(BASE + path, {
      method,
      headers: { Authorization: `Bearer ${token()}`, Accept: "application/json" },
      signal: controller.signal,
      cache: "no-store",
    });
  } catch (error) {
    health.down = error.name === "AbortError" ? `no answer in ${timeout / 1000} s`
                                              : "the API cannot be reached";
    tell();
    throw new ApiError(0, "unreachable", health.down);
  } finally {
    clearTimeout(timer);
  }
  let body = null;
  try { body = await response.json(); } catch { body = null; }
  if (response.status >= 500) {
    health.down = (body && body.error && body.error.message) || `HTTP ${response.status}`;
    tell();
  } else {
    health.lastOk = Date.now();
    health.down = null;
    tell();
  }
  if (!response.ok) {
    const error = (body && body.error) || {};
    throw new ApiError(response.status, error.code || "http_error",
                       error.message || `HTTP ${response.status}`);
  }
  return body;
}

export const get = (path, options) => call("GET", path, options);
export const post = (path, options) => call("POST", path, options);

export function query(params) {
  const given = Object.entries(params).filter(([, v]) => v !== undefined && v !== null && v !== "");
  return given.length ? "?" + new URLSearchParams(given).toString() : "";
}
