// Environment variables for A/B benchmarks: the engine reads its switches (SEALKIT_LOCAL_PACK,
// SEALKIT_LOWRANK, SEALKIT_AMX, SEALKIT_COMPACT_HEAD) per call, so one process can time a variant
// with and without them.

/** 'K=V,K=V' (a value may itself contain '='); `what` names the option in errors. */
export function parseEnvList(text: string, what: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const kv of text.split(',').filter(Boolean)) {
    const eq = kv.indexOf('=');
    if (eq <= 0) throw new Error(`${what} expects K=V[,K=V...], got '${kv}'`);
    env[kv.slice(0, eq)] = kv.slice(eq + 1);
  }
  return env;
}

/** Runs fn with env set and restores the previous values when it returns (or its promise settles). */
export function withEnv<R>(env: Record<string, string>, fn: () => R): R {
  const saved = Object.fromEntries(Object.keys(env).map((k) => [k, process.env[k]]));
  const restore = () => {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  };
  Object.assign(process.env, env);
  let settled = true;
  try {
    const r = fn();
    if (r instanceof Promise) {
      settled = false;
      return r.finally(restore) as R;
    }
    return r;
  } finally {
    if (settled) restore();
  }
}
