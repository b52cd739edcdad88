// sealkit's public API.
export { Model } from './model/model.js';
export type { CreateOptions, Device, LoadOptions, LoraOptions, ScoreResult, Sequence, Storage, TrainStepOptions, TrainStepResult } from './model/model.js';
export { packSequences } from './model/model.js';
export type { JobThreadingRow, KvCacheDtype, OpTiming, PackedBatch, ProjName } from './model/native-model.js';
export { PROJ_NAMES } from './model/native-model.js';
export { loadPeftAdapter, savePeftAdapter, readPeftConfig, peftKey } from './model/peft.js';
export type { PeftAdapterConfig } from './model/peft.js';
export { readModelConfig, writeModelConfig } from './model/hf-config.js';
export type { ModelConfig } from './model/hf-config.js';
export { planWeights } from './model/weights.js';
export { readSafetensorsHeader, readTensor, writeSafetensors } from './model/safetensors.js';
export { ModelFormatError } from './model/format-error.js';
export { learningRate } from './model/schedule.js';
export type { Schedule, ScheduleKind } from './model/schedule.js';
export { presetConfig, PRESET_NAMES } from './model/presets.js';
export { TextTokenizer, createDecodeStream } from './model/tokenizer.js';
export { native } from './native.js';
export type { NativeInfo } from './native.js';
