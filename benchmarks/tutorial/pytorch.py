"""The d2l way: a Dataset that converts one image at a time, d2l's DataLoader settings, loss.item() every batch.

d2l.FashionMNIST wraps torchvision's dataset with a ToTensor transform (uint8 H,W -> float32
1,H,W / 255, per example) and loads it with shuffle=True and num_workers=4. Without torchvision,
__getitem__ below does what ToTensor does.
"""

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

D2L_LOADER_WORKERS = 4  # d2l's get_dataloader_workers()


class FashionMNIST(Dataset):
    def __init__(self, images, labels):
        self.images, self.labels = images, labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return torch.from_numpy(self.images[index]).unsqueeze(0).float().div(255), int(self.labels[index])


def train_epoch(model, data, config, max_batches=None) -> None:
    loader = DataLoader(
        FashionMNIST(data.train_images, data.train_labels), batch_size=config.batch_size, shuffle=True,
        num_workers=D2L_LOADER_WORKERS,
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr)
    model.train()
    for batch, (x, y) in enumerate(loader):
        if batch == max_batches:
            break
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loss.item()  # what d2l's per-batch progress plot reads
