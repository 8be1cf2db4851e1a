/**
 * Loads what the engine serves from a checkpoint: weights and config (checksums verified by
 * core/checkpoint via loadServingModel) and the tokenizer saved with them.
 */
import * as path from 'path';
import { CheckpointError } from '../core/errors';
import { Tokenizer } from '../data/tokenizer';
import { loadServingModel, ServingModel } from './loadModel';

export function loadForServing(pathLike: string): { model: ServingModel; tokenizer: Tokenizer } {
  const model = loadServingModel(pathLike);
  if (!model.tokenizerJson) {
    model.store.dispose();
    throw new CheckpointError('the checkpoint has no tokenizer.json', { where: model.dir, hint: 'serve a checkpoint written by `moecat train` from tokenized data' });
  }
  const tokenizer = Tokenizer.fromJSON(model.tokenizerJson, path.join(model.dir, 'tokenizer.json'));
  if (tokenizer.vocabSize > model.config.vocabSize) {
    model.store.dispose();
    throw new CheckpointError(`the tokenizer has ${tokenizer.vocabSize} ids but the model only ${model.config.vocabSize}`, { where: model.dir });
  }
  return { model, tokenizer };
}

/** A model id for the API: the run's name for `<run>/checkpoints/step-N`, else the directory name. */
export function defaultModelId(checkpointDir: string): string {
  const parent = path.dirname(checkpointDir);
  return path.basename(parent) === 'checkpoints' ? path.basename(path.dirname(parent)) : path.basename(checkpointDir);
}
