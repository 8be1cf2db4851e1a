/** FLGP domain classifier (DESIGN.md section 9; arXiv 2405.13342): public API. */
export { fitFLGP, normaliseLabels, predictFromFits } from './flgp';
export type { FLGPOptions, FLGPModel, FLGPPrediction, ClassFit, Labels } from './flgp';
export { fitHeatKernelRegression, gpRegressionEigen } from './regression';
export type { RegressionFit } from './regression';
export { kmeansAnchors, nearestAnchors } from './anchors';
export type { Matrix, Neighbours } from './anchors';
export { seAffinity, laeAffinity, localAnchorEmbedding, projectToSimplex } from './affinity';
export type { SparseZ } from './affinity';
export { spectrumFromZ, heatKernelBlock, heatWeights } from './spectrum';
export type { Spectrum } from './spectrum';
export { laplaceFunctionSpace, laplaceEigen, predictEigen, predictFunctionSpace, probitProbability } from './laplace';
export { embedDocuments, tokenize } from './embed';
export { rbfGpClassify, knnClassify, logisticRegressionClassify, accuracy } from './baselines';
export { fitDomainModel, tagDocuments, parseDomainModel, DomainModelSchema } from './tagger';
export type { DomainModel, DomainOptions, InputDoc, InputLabel, Tagged } from './tagger';
export { concentricCircles, pickLabelled } from './synthetic';
export { loadBundledCorpus, BUNDLED_DOMAINS } from './corpus';
