"""The d2l way: a DataLoader over float tensors, shuffled by the loader, loss.item() every batch."""

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from common.data import scale_images


def train_epoch(model, data, config, max_batches=None) -> None:
    dataset = TensorDataset(torch.from_numpy(scale_images(data.train_images)), torch.from_numpy(data.train_labels))
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr)
    model.train()
    for batch, (x, y) in enumerate(DataLoader(dataset, batch_size=config.batch_size, shuffle=True)):
        if batch == max_batches:
            break
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loss.item()  # what a per-batch progress plot reads
