"""The losses and metrics of the tasks beyond classification, as plain torch functions.

One module per task; each imports only torch and the standard library, so that the worker and an exported
``train.py`` (which copies a module's source) compute the same:

- `nas.tasks.contrastive`: Siamese pairs: the marginal contrastive loss, the matching function, pair
  accuracy and ROC AUC, and the tracking evaluation (success rate on sequences);
- `nas.tasks.segmentation`: per-pixel cross entropy, the confusion matrix, mean IoU and pixel accuracy;
- `nas.tasks.detection`: Fast R-CNN's proposal labelling and box encoding, its loss (classification plus
  smooth-L1 box regression), non-maximum suppression and mAP at IoU 0.5;
- `nas.tasks.multilabel`: binary cross entropy over the labels and mean average precision.
"""
